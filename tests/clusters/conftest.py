from tests.clusters import standins

standins.install()
