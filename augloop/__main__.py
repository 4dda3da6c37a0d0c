from augloop.cli import main

main()
