from uns_bridge.cli import main

main()
