"""The catalog (service types, profiles, policies, backend) and the hub's configuration."""

from .catalog import Catalog, InputSpec, Policy, Profile, ServiceType
from .configure import configure
from .loader import CatalogError, CatalogIssue, catalog_from_dict, load_catalog, parse_catalog

__all__ = [
    "Catalog",
    "CatalogError",
    "CatalogIssue",
    "InputSpec",
    "Policy",
    "Profile",
    "ServiceType",
    "catalog_from_dict",
    "configure",
    "load_catalog",
    "parse_catalog",
]
