# placeholder: filled by its owner (see docs/architecture.md)
