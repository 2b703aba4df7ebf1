"""The operator console: the Django admin's dashboard and the pages operators would rather look
at than read (run curves, confusion matrices, image grids, live tasks), for global admins and,
scoped to their projects, project admins."""
