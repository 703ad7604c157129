from __future__ import annotations

from django.urls import path

from example_project.notes import views

urlpatterns = [
    path("", views.index),
    path("notes/", views.create_note),
    path("notes/<int:pk>/", views.note_detail),
]
