import hashlib

from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.core.files.storage import default_storage
from django.db import connection
from django.http import FileResponse, Http404, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from .forms import UploadForm


def upload(request):
    """A form page: GET shows the form, POST saves the file to the media storage and answers
    what was saved (its name, size and SHA-256 read back from the storage)."""
    if request.method == "POST":
        form = UploadForm(request.POST, request.FILES)
        if form.is_valid():
            uploaded = form.cleaned_data["file"]
            name = default_storage.save(uploaded.name, uploaded)
            digest = hashlib.sha256()
            with default_storage.open(name, "rb") as saved:
                for chunk in saved.chunks():
                    digest.update(chunk)
            return JsonResponse({
                "title": form.cleaned_data["title"],
                "name": name,
                "size": default_storage.size(name),
                "sha256": digest.hexdigest(),
            })
        return JsonResponse({"errors": form.errors}, status=400)
    return render(request, "files/upload.html", {"form": UploadForm()})


def _lines(count):
    for number in range(count):
        yield f"line {number:05d} of {count}\n".encode()


@require_safe
def stream(request):
    """A response made while it is sent: ``count`` lines, none of them known in advance."""
    count = int(request.GET.get("count", "1000"))
    return StreamingHttpResponse(_lines(count), content_type="text/plain; charset=utf-8")


@require_safe
def download(request, name):
    """A file of the media storage, sent as it is (FileResponse: the server's file_wrapper)."""
    if not default_storage.exists(name):
        raise Http404(name)
    return FileResponse(default_storage.open(name, "rb"), content_type="application/octet-stream")


@require_safe
def queries(request):
    """Three queries, as a page of an app makes them; on PostgreSQL the second one waits
    ``?wait=`` seconds in the server, as a slow query would."""
    users = User.objects.count()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_sleep(%s), pg_backend_pid()", [float(request.GET.get("wait", 0))])
            backend = cursor.fetchone()[1]
        else:
            cursor.execute("SELECT 1")
            backend = None
    sessions = Session.objects.count()
    return JsonResponse({"users": users, "sessions": sessions, "backend": backend})
