"""The shared models module: generators, discriminators and losses for every recipe, with
explicit registries. Training and restoration both import from here."""
