"""``tritondsl publish-release``: upload a release bundle to GitHub."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from tritondsl.cli.app import Quiet, Verbose, app, fail

log = logging.getLogger(__name__)


@app.command("publish-release")
def publish_release(
    bundle: Annotated[
        Path,
        typer.Argument(
            help="a folder written by `tritondsl export --format release`", show_default=False
        ),
    ],
    repo: Annotated[str, typer.Option(help="GitHub repository OWNER/NAME", show_default=False)],
    tag: Annotated[str, typer.Option(help="release tag, e.g. v1.0.0", show_default=False)],
    token_env: Annotated[
        str, typer.Option(help="environment variable that holds the GitHub token")
    ] = "GITHUB_TOKEN",
    api_url: Annotated[str, typer.Option(help="GitHub REST API root")] = "https://api.github.com",
    _v: Verbose = 0,
    _q: Quiet = False,
) -> None:
    """Upload a release bundle as a GitHub release; every file's sha256 is checked first."""
    import os

    from tritondsl.export.github import publish_release as publish
    from tritondsl.export.release import ReleaseError

    # The token comes from the environment, never the command line (shell history, ps).
    token = os.environ.get(token_env, "")
    if not token:
        raise typer.BadParameter(f"${token_env} is not set", param_hint="--token-env")
    try:
        result = publish(bundle, repo, tag, token, api_url=api_url)
    except ReleaseError as error:
        fail(str(error))
    typer.echo(f"released {tag}: {result['html_url']}")
    for url in result["assets"]:
        typer.echo(f"  {url}")
