"""A teacher for Grow: in the rounds listed in `teacher.rounds` another model writes the samples,
and the policy learns from them (distill first, then self-improve).

    rest-loop teacher=local teacher.model.source=Qwen/Qwen2.5-1.5B-Instruct teacher.rounds=[1]
    rest-loop teacher=openai teacher.model=gpt-4o-mini teacher.base_url=https://api.openai.com/v1

Samples record the teacher as their `policy`; the pool cache and resume treat them as a policy's.
"""

from rest_loop.teacher.teachers import EndpointTeacher, LocalTeacher

__all__ = ["EndpointTeacher", "LocalTeacher"]
