"""The platform's on-demand data-exhaust API (SPEC §6): program managers request their report and fetch it
through a signed link, over HTTP. Above report/: nothing below imports it."""
