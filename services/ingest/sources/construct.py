"""Building canonical events from values already checked: pydantic's `model_construct`, without its cost.

A Segment call's events were built by validating them again (a Python NUL validator on every field of the
canonical models), then by `model_construct`, whose Python loop over each model's fields (defaults resolved
and deep-copied one by one) was still a third of a batch's mapping time. `Constructor` works the fields'
order and defaults out once per model and fills an instance from them: the same `__dict__` (fields in
declaration order, which is the order pydantic serialises them in), the same set of fields given, no
validation. Only for values that passed every check the model would make.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)
_set = object.__setattr__


class Constructor(Generic[M]):
    """`Constructor(Model)(**values)` is `Model.model_construct(**values)` for a model without aliases,
    private attributes, post-init or extra fields."""

    def __init__(self, model: type[M]) -> None:
        self._model = model
        template: dict[str, Any] = {}
        factories: list[tuple[str, Any]] = []
        for name, field in model.model_fields.items():
            if field.alias is not None or field.validation_alias is not None:
                raise TypeError(f"{model.__name__}.{name}: aliases are not supported")
            if field.default_factory is not None:
                factories.append((name, field.default_factory))
            # A required field keeps its place; every call gives it (a missing one stays Undefined).
            template[name] = field.default
        if (
            model.__private_attributes__
            or model.__pydantic_post_init__
            or model.model_config.get("extra") == "allow"
        ):
            raise TypeError(f"{model.__name__}: private attributes, post-init or extra fields")
        self._template = template
        self._factories = tuple(factories)

    def __call__(self, **values: Any) -> M:
        return self.of(values)

    def of(self, values: dict[str, Any]) -> M:
        """The instance of these field values (the dict is not kept)."""
        fields = self._template.copy()
        fields.update(values)
        for name, factory in self._factories:
            if name not in values:
                fields[name] = factory()
        instance = self._model.__new__(self._model)
        _set(instance, "__dict__", fields)
        _set(instance, "__pydantic_fields_set__", set(values))
        _set(instance, "__pydantic_extra__", None)
        _set(instance, "__pydantic_private__", None)
        return instance
