"""The dataset viewer: ``hopforge view`` serves questions and trajectories on 127.0.0.1."""

from hopforge.viewer.app import create_app, serve

__all__ = ["create_app", "serve"]
