from rltransfer.cli import main

if __name__ == "__main__":  # worker processes import this module too; only the study runs main
    raise SystemExit(main())
