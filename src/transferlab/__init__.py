"""transferlab: configuration-driven experiments that compare transfer-learning strategies."""

from transferlab.core.errors import TransferlabError

__version__ = "0.1.0"
__all__ = ["TransferlabError", "__version__"]
