"""The `edgecell` commands, one module each. A command module defines one Typer function (its
options are its parameters, its docstring its help) and imports everything heavy inside it, so
`edgecell --help` stays fast and imports no model code. `edgecell.cli.COMMANDS` registers each
with one line; a command parses options, calls the library and renders, nothing more."""
