from __future__ import annotations

from django.contrib import admin

from example_project.notes.models import Note

admin.site.register(Note)
