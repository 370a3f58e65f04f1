#!/bin/sh
# Claude Code: register threadline for your user (all projects).
claude mcp add --scope user threadline -- threadline serve
# From a checkout, without installing:
# claude mcp add --scope user threadline -- uvx --from /absolute/path/to/threadline threadline serve
# A remote threadline (HTTP), with a token from `threadline token add`:
# claude mcp add --scope user --transport http threadline https://threadline.example/mcp \
#     --header "Authorization: Bearer $THREADLINE_TOKEN"
