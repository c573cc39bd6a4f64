"""The Django app of coffer.django (it brings the ``coffer_reencrypt`` command)."""

from django.apps import AppConfig


class CofferConfig(AppConfig):
    name = "coffer.django"
    label = "coffer"
    verbose_name = "Coffer"
