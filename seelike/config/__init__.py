"""The workflow config beyond its schema: the cross-key checks every dry run makes and the model list of each
analysis (`seelike.config.checks`), called from workflow/rules/common.smk and unit-tested in-process."""

from seelike.config.checks import (
    LISTED_SECTIONS,
    N_IMAGES_SECTIONS,
    SECTION_NAMES,
    ConfigError,
    WorkflowConfig,
    check_config,
)

__all__ = [
    "LISTED_SECTIONS",
    "N_IMAGES_SECTIONS",
    "SECTION_NAMES",
    "ConfigError",
    "WorkflowConfig",
    "check_config",
]
