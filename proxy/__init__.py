"""moonrelay's relay: an OpenAI-compatible streaming proxy on quart-trio, served by hypercorn."""
