"""The model: llama.cpp bindings, loading, sampling, and the model files it runs."""
