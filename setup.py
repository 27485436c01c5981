"""shopstream: clickstream and orders → live Redis rankings, engagement, sales, churn."""
from pathlib import Path

from setuptools import find_namespace_packages, setup

HERE = Path(__file__).parent


def _requirements(name: str) -> list:
    lines = (HERE / name).read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


setup(
    name="shopstream",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.10,<3.15",
    # Namespace discovery lists the data folders (transforms/schemas, batch/data,
    # pipelines/web) as packages, so their files ship without setuptools warnings.
    packages=find_namespace_packages(include=["pipelines*", "transforms*", "models*", "batch*"],
                                     exclude=["*.__pycache__"]),
    package_data={"transforms.schemas": ["*.json"], "batch.data": ["*"], "pipelines.web": ["*"]},
    install_requires=_requirements("requirements.txt"),
    # Workers get install_requires only; the front door adds "serve" (API, report).
    extras_require={"serve": _requirements("requirements-serve.txt"),
                    "test": _requirements("requirements-dev.txt")},
    entry_points={"console_scripts": ["shopstream=pipelines.cli:main"]},
)
