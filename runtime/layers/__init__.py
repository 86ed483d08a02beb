"""Model building blocks shared by the architectures: norms, rotary embeddings, activations."""
