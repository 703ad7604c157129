from __future__ import annotations

from django.urls import path

from example_project.notes import views
from routerkit.views import metrics

urlpatterns = [
    path("", views.index),
    path("metrics", metrics, views.METRICS_ACCESS),
    path("notes/", views.create_note),
    path("notes/<int:pk>/", views.note_detail),
]
