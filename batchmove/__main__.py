from batchmove.cli import main

main()
