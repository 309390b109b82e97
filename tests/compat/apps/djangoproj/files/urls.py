from django.urls import path

from . import views

urlpatterns = [
    path("upload/", views.upload, name="upload"),
    path("stream/", views.stream, name="stream"),
    path("files/<str:name>", views.download, name="download"),
    path("queries/", views.queries, name="queries"),
]
