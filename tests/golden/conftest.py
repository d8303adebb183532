"""Golden values from the official DreamerV3 code (2024 agent, float32, CPU).

``dreamerv3_2024.npz`` is a copy of ``shared/golden/dreamerv3_2024.npz`` (the project's
maintainers ran the official modules unchanged to make it; its README there gives every
array's meaning, shapes and parameter layout). Keys are ``<case>/<name>``; parameter
keys keep the official path after ``params/``.
"""

import os

import numpy as np
import pytest
import torch

PATH = os.path.join(os.path.dirname(__file__), "dreamerv3_2024.npz")


@pytest.fixture(scope="session")
def golden():
    data = np.load(PATH)
    return {k: data[k] for k in data.files}


def t(array) -> torch.Tensor:
    """A float32 (or bool / int) torch tensor of a golden array."""
    return torch.as_tensor(np.asarray(array))
