from explore.cli import main

main()
