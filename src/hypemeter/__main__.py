from hypemeter.cli import main

main()
