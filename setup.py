"""Map the customer's folders to the one import name ``spark_ml`` and build the C kernel of the feature state.

Everything else is configured in pyproject.toml. ``spark_ml.core`` is ``core/``, ``spark_ml.worker`` is
``worker/``, and so on: the repository keeps its layout while the install adds a single top-level name.

The extension is optional: where no C compiler exists the install still succeeds and
:mod:`spark_ml.core.features` uses its Python implementation (the same numbers, about 2.5 us a snapshot
slower; ``spark-ml worker`` logs which one it runs).
"""

from setuptools import Extension, find_packages, setup

FOLDERS = ("core", "worker", "gateway", "scripts", "client")
package_dir = {f"spark_ml.{folder}": folder for folder in FOLDERS}
packages = [f"spark_ml.{folder}" for folder in FOLDERS]
packages += [f"spark_ml.{folder}.{sub}" for folder in FOLDERS for sub in find_packages(folder)]

setup(
    packages=packages,
    package_dir=package_dir,
    ext_modules=[
        Extension(
            "spark_ml.core.features._featkernel",
            ["core/features/_featkernel.c"],
            # No contraction into fused multiply-adds and no fast-math: the results must equal Python's bit
            # for bit (tests/core/test_featkernel.py).
            extra_compile_args=["-O2", "-ffp-contract=off", "-fno-fast-math", "-std=c11"],
            optional=True,
        )
    ],
)
