"""Pure data functions: labeled examples, dataset compilation, versions."""
