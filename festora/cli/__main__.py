from festora.cli.app import main

main()
