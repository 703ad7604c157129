"""The example project's own tests, as a user of routerkit writes them.

They run under Django's test runner (``manage.py test example_project``) and
under pytest-django (``pytest -c example_project/pytest.ini``), on the
embedded SQLite default or, with DATABASE_URL and DATABASE_REPLICA_URLS set,
on a PostgreSQL primary and its replicas (TEST["MIRROR"]s of the primary).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from django.contrib.auth.models import User
from django.test import TestCase, TransactionTestCase

import routerkit
from example_project.notes.models import Note


class NotesTests(TestCase):
    databases = "__all__"

    def test_create_then_read_through_the_api(self) -> None:
        """POST /notes/ then GET /notes/<id>/ returns the note."""
        response = self.client.post("/notes/", {"text": "hello"})
        self.assertEqual(response.status_code, 201)
        pk = response.json()["id"]
        response = self.client.get(f"/notes/{pk}/")
        self.assertEqual(response.json(), {"id": pk, "text": "hello"})

    def test_a_note_made_by_the_test_is_served(self) -> None:
        """A note created with the ORM is found by the API."""
        note = Note.objects.create(text="from the test")
        response = self.client.get(f"/notes/{note.pk}/")
        self.assertEqual(response.status_code, 200)

    def test_a_missing_note_is_404(self) -> None:
        """An id that was never created is a 404."""
        self.assertEqual(self.client.get("/notes/987654/").status_code, 404)

    def test_the_admin_lists_notes_for_a_logged_in_superuser(self) -> None:
        """The admin works with request.user on the routed auth database."""
        Note.objects.create(text="in the admin")
        user = User.objects.create_superuser("admin", "admin@example.com", "pw")
        self.client.force_login(user)
        response = self.client.get("/admin/notes/note/")
        self.assertContains(response, "in the admin")
        response = self.client.post("/admin/notes/note/add/", {"text": "added in the admin"})
        self.assertEqual(response.status_code, 302)
        self.assertTrue(Note.objects.filter(text="added in the admin").exists())


class CommittedNotesTests(TransactionTestCase):
    databases = "__all__"

    def test_rows_written_by_the_test_are_seen_by_requests(self) -> None:
        """Committed ORM writes, then the test client: the request reads them."""
        note = Note.objects.create(text="committed")
        response = self.client.get(f"/notes/{note.pk}/")
        self.assertEqual(response.json(), {"id": note.pk, "text": "committed"})

    def test_rows_written_by_requests_are_seen_by_the_test(self) -> None:
        """A POST through the test client, then the ORM: the test reads the row."""
        pk = self.client.post("/notes/", {"text": "posted"}).json()["id"]
        self.assertEqual(Note.objects.get(pk=pk).text, "posted")

    def test_a_thread_started_with_scoped_sees_the_tests_writes(self) -> None:
        """routerkit.scoped() hands the test's routing state to a worker thread."""
        note = Note.objects.create(text="for the thread")
        with ThreadPoolExecutor(max_workers=1) as pool:
            text = pool.submit(routerkit.scoped(lambda: Note.objects.get(pk=note.pk).text))
            self.assertEqual(text.result(), "for the thread")


class DefaultDatabaseOnlyTests(TransactionTestCase):
    """Django's default `databases`: the replicas are not listed, so reads stay on the primary."""

    def test_a_read_only_request(self) -> None:
        """A GET with no write before it would pick a replica: the primary serves it."""
        response = self.client.get("/notes/987654/")
        self.assertEqual(response.status_code, 404)
        self.assertEqual(response.headers["X-Routerkit-Database"], "default")

    def test_a_posted_note_is_read_back(self) -> None:
        """POST then GET with the test client, then the ORM, without naming any replica."""
        pk = self.client.post("/notes/", {"text": "on default only"}).json()["id"]
        self.assertEqual(self.client.get(f"/notes/{pk}/").json()["text"], "on default only")
        self.assertEqual(Note.objects.get(pk=pk).text, "on default only")

    def test_the_admin_without_replicas_listed(self) -> None:
        """Logged-in admin pages read sessions and users: none of it may touch a replica."""
        Note.objects.create(text="listed")
        self.client.force_login(User.objects.create_superuser("root", "r@example.com", "pw"))
        self.assertContains(self.client.get("/admin/notes/note/"), "listed")
