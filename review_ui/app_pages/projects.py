"""Projects (admins): every dataset belongs to one; its members are annotators (read and review) or leads
(also settings, augmentation and training). Nobody else sees its datasets."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from review_ui.render import plain
from review_ui.state import (
    admin_page,
    call,
    call_and_flash,
    client,
    double_clicks_tail,
    flash,
    submit_key,
    submit_once,
)

ROLES = ["annotator", "lead"]


def add_member() -> None:
    project, name, role = (
        st.session_state["member_project"],
        st.session_state["member_name"].strip(),
        st.session_state["member_role"],
    )  # read at click time
    if not name:  # the button did nothing at all: no request, no word
        flash("error", "Type the user name of the member to add.")
        return
    call_and_flash(plain(f"{name} is now {role} of {project}."), client().set_member, project, name, role)


def remove_member() -> None:
    project, name = st.session_state["member_project"], st.session_state["remove_pick"]
    call_and_flash(plain(f"Removed {name} from {project}."), client().remove_member, project, name)


admin_page("Projects")
# A fresh form once a project is made (review_ui.state.submit_once: the form's clear_on_submit emptied the fields
# before a double click's second submission)
form = submit_key("project")
with st.form(form + "_form"):
    slug = st.text_input("Project name (a slug: lower-case letters, digits, -)", key=form + "_slug")
    display = st.text_input("Display name (optional)", key=form + "_display")
    go = st.form_submit_button("Create project", type="primary", key=form)
if go and not slug.strip() and double_clicks_tail("project"):
    pass  # the second click of a double click, on the form drawn anew (review_ui.state.double_clicks_tail)
elif go:
    api = client()
    submit_once(
        "project",
        api.create_project,
        slug.strip(),
        display.strip() or None,
        said=lambda made: ("success", plain(f"Created project {made['name']}.")),
    )
    st.rerun()
projects = call(client().projects) or []
if projects:
    st.dataframe(
        pd.DataFrame(projects)[["name", "display_name", "members", "datasets", "created_at"]],
        hide_index=True,
        width="stretch",
    )
    project = st.selectbox("Members of", [p["name"] for p in projects], key="member_project")
    members = call(client().members, project) or []
    if members:
        st.dataframe(pd.DataFrame(members)[["user", "role", "global_role"]], hide_index=True, width="stretch")
    else:
        st.caption("No members yet: only admins see this project's datasets.")
    left, right = st.columns(2)
    with left:
        st.text_input("User name", key="member_name")
        st.selectbox("Role in the project", ROLES, key="member_role")
        st.button("Add or change member", on_click=add_member, key="add_member_btn")
    with right:
        if members:
            pick = st.selectbox("Member to remove", [m["user"] for m in members], key="remove_pick")
            st.button(plain(f"Remove {pick}"), on_click=remove_member, key="remove_member_btn")
