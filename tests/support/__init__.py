"""What the tests share that is not a fixture: child processes, fake servers, a real redis-server, the repo root."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
