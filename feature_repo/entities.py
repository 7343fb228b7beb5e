"""Feast entities, derived from pitstore/spec.py."""

from feast import Entity, ValueType

from pitstore.core.spec import ACCOUNT, MERCHANT

account = Entity(
    name=ACCOUNT.name,
    join_keys=[ACCOUNT.join_key],
    value_type=ValueType.STRING,
    description=ACCOUNT.description,
)
merchant = Entity(
    name=MERCHANT.name,
    join_keys=[MERCHANT.join_key],
    value_type=ValueType.STRING,
    description=MERCHANT.description,
)
ENTITIES = {ACCOUNT.name: account, MERCHANT.name: merchant}
