#!/bin/sh
# Claude Code: register threadline for your user (all projects).
claude mcp add --scope user threadline -- threadline serve
# From a checkout, without installing:
# claude mcp add --scope user threadline -- uvx --from /absolute/path/to/threadline threadline serve
