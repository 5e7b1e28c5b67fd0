"""Input spaces: which inputs exist, how they are made, stored and decoded (pipeline/inputs/space.py).

`get_space(name)` is the run's space object; importing this package registers the kinds below."""

from pipeline.inputs import field_space, image_space, vector_space  # noqa: F401  (each registers its kind)
from pipeline.inputs.space import SPACES, InputSpace, get_space

__all__ = ["SPACES", "InputSpace", "get_space"]
