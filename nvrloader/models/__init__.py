"""Model zoo: every implicit video representation behind one registry."""
from nvrloader.models.registry import create_model, list_models, model_class, model_config, register_model

__all__ = ["create_model", "list_models", "model_class", "model_config", "register_model"]
