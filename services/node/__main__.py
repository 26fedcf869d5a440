from services.node.server import main

main()
