"""Real-browser tests (JupyterLab + Chromium); a package so its conftest has its own name."""
