from edgecell.errors import EdgecellError
def main():
    raise SystemExit("not yet")
