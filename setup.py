"""Package discovery: every ``sipgrad.*`` package is found automatically, so none can be
forgotten, and the command-line layer in ``./cli`` installs as ``sipgrad_cli``.
(pyproject.toml holds everything else; it cannot express both in one table.)"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["sipgrad", "sipgrad.*"]), "sipgrad_cli"],
    package_dir={"sipgrad_cli": "cli"},
)
