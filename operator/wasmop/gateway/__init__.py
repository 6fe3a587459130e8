"""The HTTP entry point to functions: ``/<namespace>/<service>[/<path>]`` to a ready Pod."""
