"""Installs `distill` (the library) and `experiments` (its entry points)."""

import setuptools

INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "chex==0.1.92",
    # jax.export's serialization (the deployable student) needs it.
    "flatbuffers>=24.3",
    "ml-collections==1.1.0",
    "absl-py>=2.1",
    "numpy>=2.0,<2.5",
    "h5py>=3.10",
    "gymnasium[mujoco]==1.4.0",
    # One MuJoCo for both suites: Meta-World 3.1.1 (MT10) pins 3.3.0 and fails
    # on 4.x; the locomotion suite's digests (README) are measured under it.
    "mujoco==3.3.0",
    "metaworld==3.1.1",
    # metaworld imports it without declaring it.
    "packaging>=23",
    "rliable==1.2.0",
    # rliable's bootstrap imports `arch`, whose 7.x release breaks on pandas 3.
    "pandas>=2.2,<3",
    "matplotlib>=3.8",
    "tensorboardX>=2.6",
    "tqdm>=4.66",
    "submitit==1.5.4",
]

EXTRAS_REQUIRE = {
    "test": ["pytest>=8", "pytest-xdist>=3.5", "ruff==0.17.6"],
    # `import d4rl` fails without MuJoCo 2.1 binaries; the HDF5 reader does not
    # need it. See README.md for the install that imports.
    "d4rl": ["d4rl", "gym==0.23.1"],
    "minari": ["minari==0.5.4"],
}

setuptools.setup(
    name="distill",
    version="0.1.0",
    description=(
        "Offline multi-task RL: Decision Transformer teachers distilled into"
        " one small student with a KL curriculum and gradient surgery."
    ),
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["distill", "distill.*",
                                               "experiments", "experiments.*",
                                               "configs", "configs.*"]),
    package_data={"distill": ["envs/snapshots/*.msgpack",
                              "envs/snapshots/*.json"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
