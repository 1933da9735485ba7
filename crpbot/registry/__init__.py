"""Registry stage: verified artifact directories, the local registry of promoted models, its S3
mirror, and where Ray keeps run state. Imports only ``crpbot.data`` (coin names) below it."""

from crpbot import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "write_artifact": "artifact",
        "verify_artifact": "artifact",
        "read_artifact_json": "artifact",
        "promote": "local",
        "rollback": "local",
        "current_path": "local",
        "current_version": "local",
        "list_versions": "local",
        "show": "local",
        "push": "transfer",
        "pull": "transfer",
        "ray_storage": "storage",
        "validate_storage": "storage",
    },
)
