"""The hosted challenge as plain services: spec, store (models, migrations), teams, phases, tracks,
organiser actions. Nothing here knows HTTP or the CLI; it raises `datarena.errors`."""
