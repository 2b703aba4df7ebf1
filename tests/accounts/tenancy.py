URL_KWARGS = {
    # A member of the other project: its membership route must stay invisible.
    "username": lambda project, user: user.username,
}
