from __future__ import annotations

from django.urls import path

from offload_app import views

urlpatterns = [
    path("write/<int:client>/<int:seq>/", views.write),
    path("read/<int:client>/", views.read),
]
