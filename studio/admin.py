"""Admin of the ``studio`` app: registers the catalogue's and the API keys' admins (Django loads this module)."""

from studio.catalogue import admin as catalogue_admin  # noqa: F401  (registers Object, PersonalizedObject)
from studio.core import admin as core_admin  # noqa: F401  (registers ApiKey)
