"""Settings of a minimal Django project as its users write one (see Django's "startproject"
template): the admin, sessions, CSRF, and one app of views that upload, stream and send files.

Where the database and the uploaded files live is told by the environment (DJANGOPROJ_DATA, a
folder), as deployments usually do, so that nothing is written beside the code.
"""

import os
from pathlib import Path

DATA = Path(os.environ["DJANGOPROJ_DATA"])

SECRET_KEY = "greenserve-compat-not-a-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "djangoproj.files",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "djangoproj.urls"
WSGI_APPLICATION = "djangoproj.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DATA / "db.sqlite3",
    }
}
if os.environ.get("DJANGOPROJ_PG_PORT"):  # PostgreSQL instead, as a deployment would say
    DATABASES["default"] = {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": os.environ["DJANGOPROJ_PG_PORT"],
        "NAME": os.environ["DJANGOPROJ_PG_NAME"],
        "USER": "postgres",
        "CONN_MAX_AGE": 0,  # Django's default: a connection per request
        "CONN_HEALTH_CHECKS": True,
    }
    if os.environ.get("DJANGOPROJ_PG_POOL"):  # Django >= 5.1 with psycopg 3: a pool instead
        DATABASES["default"]["OPTIONS"] = {"pool": {"min_size": 2, "max_size": 40,
                                                    "timeout": 30}}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
MEDIA_ROOT = DATA / "media"
MEDIA_URL = "media/"
FILE_UPLOAD_TEMP_DIR = DATA / "tmp"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
