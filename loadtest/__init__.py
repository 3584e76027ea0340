"""moonrelay's load generator: trio sessions that measure streaming chat completions, and a simulated upstream."""
