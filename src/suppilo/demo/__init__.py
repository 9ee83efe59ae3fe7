"""The deterministic demo business (Pohjola Outdoor): generator, catalogue, names, loader."""
