"""The pure core: entities, value objects, use cases, ports. Stdlib and msgspec only."""
