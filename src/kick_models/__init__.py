"""kick: compress an LLM when lm-eval loads it, and measure what compression costs (LLM-KICK).

Importing this package registers the ``kick-hf`` model with lm-eval (lazily: the model class and
torch load only when ``kick-hf`` is used). ``task_manager()`` returns a TaskManager with the KICK tasks.
"""

from kick_models.registration import register_model, task_manager

__version__ = "0.1.0"
__all__ = ["task_manager", "__version__"]

register_model()
